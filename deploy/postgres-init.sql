-- One database per audience view (a view database holds one audience's view), beside the hub's.
CREATE DATABASE hub_view_mals OWNER hub;
CREATE DATABASE hub_view_police_iom OWNER hub;
